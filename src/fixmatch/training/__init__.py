"""Training: the run (train.py: data, labels, run directory, summary), the step and the loop
(engine.py), its parts (ema, optim, sampler, checkpoint, schedule_planner) and the speed switches
(fast.py, augment_graph.py, augment_stream.py), one process or many (distributed.py)."""
