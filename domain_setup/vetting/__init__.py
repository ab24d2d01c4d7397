"""Vetting: what the domain thinks of submitted code, and what a run of it may release.

    registry     PlanKind: one registered object per kind of code (its function, inputs,
                 constants, output contract, privacy mechanism, and what bounds every
                 field it releases); identify(source), check_result, release_table
    kinds/       one module per plan kind (train, evaluate, secure_train, aggregate,
                 train_private, secure_train_private, evaluate_private, custom)
    mechanisms   the privacy mechanisms: none, DP-SGD, noisy counts
    constants    the schemas of a plan's constants (config, weights, round, privacy)
    contract_parts  what output contracts are made of, and ContractContext
    verdicts     the verdict on a request: vetted, custom or violating, with every reason
    linter       the advisory static linter for custom code (never the guard)
    failures     the fixed lines a researcher gets when a run releases nothing
"""
