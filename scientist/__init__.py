"""Researcher side of PneumoSyft: connect, plan, submit, wait, fetch, evaluate.

    from scientist import connect
    client = connect()                       # reads $PNEUMOSYFT_CONNECTION
    plan = TrainingPlan(model="small_cnn", epochs=3)
"""

from scientist.connect import connect, load_connection_file, my_runs
from scientist.plans import TrainingPlan

__all__ = ["connect", "load_connection_file", "my_runs", "TrainingPlan"]
