"""One module per plan kind; importing this package registers every one of them.

A kind's module declares its `PlanKind` (function, inputs, constants, output contract,
privacy mechanism, and what bounds each released field) and calls `register`. Every
module in this folder is imported, in name order, so adding a kind is its function in
``common/vetted_plans.py`` and one file here.
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
