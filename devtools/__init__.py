"""Development tooling run from a checkout: the local playground, `make serve`, supervision.

Kept out of the shipped package (pyproject's packages.find lists multiarch, flows, tasks).
"""
