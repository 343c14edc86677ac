"""Analysing results: the runs of a sweep, statistics over seeds, figures and the reports.
Reads run records only; free of torch, Lightning and Hydra."""
