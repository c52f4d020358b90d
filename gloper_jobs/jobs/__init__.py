"""Jobs: how each kind is recorded and run (``kinds/``), one photo's pipeline, the embedded
runner, the queue's submitting and executing sides, and the one recording path.

Importing it loads no torch and no method (the worker's main process imports it).
"""
