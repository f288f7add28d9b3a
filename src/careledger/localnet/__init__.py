"""A local consortium on this machine: N validators' processes, for development and tests.

This sits above `node/`: it writes each node's directory and starts, for each node, CometBFT
and the node's application process (`python -m careledger.node.network`).
"""
