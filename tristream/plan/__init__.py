"""Plan and predict a run before spending the machine: measure what each stage costs here
(:mod:`costs`), simulate the pipeline on those costs with the runtime's own scheduling rules
(:mod:`model`), and search the shard plan and batching settings for the best predicted throughput
(:mod:`planner`). docs/planning.md explains the model and how far to trust it.
"""
