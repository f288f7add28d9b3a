"""What a node and its clients both speak: blob batch frames and the error table.

The node (`node/`) and the client SDK (`wallet/`) import this; it imports only `chain`'s
result codes, so neither side reaches into the other.
"""
