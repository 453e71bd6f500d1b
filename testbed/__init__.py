"""Real servers for tests, the demo and benchmarks, started and stopped by PID.

Not part of the installed package. Traffic stays on loopback (and, later, in
network namespaces these helpers create themselves).
"""
