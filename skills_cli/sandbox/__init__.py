"""The code sandbox: an HTTP service that runs untrusted Python (model-written code, benchmark tests) with time,
memory and output limits, no network and a clean environment, and the client the graders and the generation
program (tool-integrated reasoning) call it with. Standard library only, so any python3 image can run it."""
