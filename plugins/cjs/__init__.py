"""Cluster job scheduling: the Decima-style Spark simulator on the TPC-H DAGs, the graph encoder,
the rule and learned baselines (FIFO, fair, SRWF, Decima), the experience pool and the
return-conditioned sequence policies of teacher and student (docs/cjs.md)."""
