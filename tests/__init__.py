# A regular package, so `tests.conftest` is this folder even where an installed distribution ships a
# top-level `tests` package of its own (torch-fidelity 0.4 does), which would otherwise shadow it.
