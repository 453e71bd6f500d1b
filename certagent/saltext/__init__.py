"""Salt execution and state modules for certagent, found through the `salt.loader` entry
point (`certagent = "certagent.saltext"`): Salt loads `modules/` and `states/` from here.

Both call certagent's Python API (`certagent.api`) and return its report as data; they
never run the certagent command or parse its text.
"""
