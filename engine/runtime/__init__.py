"""A network made runnable: the inference session (load, run, probe), the backends that run a
graph (torch, torch.compile, ONNX Runtime) with the ONNX export and its cache, and the precision
and device policy."""
