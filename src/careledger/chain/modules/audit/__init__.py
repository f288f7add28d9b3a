"""The audit module: access entries batched and signed by the serving node, the patient's
access log, and the break-glass alerts on top of it."""
