"""Training: a config made ready (resolve.py), the run top to bottom (train.py: data, labels, run
directory, summary), the trainer and its step (engine.py, given a batch.py Batch), the loop
(loop.py), its parts (ema, optim, checkpoint, metrics, curriculum, schedule_planner) and the speed
switches (fast.py, augment_graph.py, augment_stream.py), one process or many (distributed.py)."""
