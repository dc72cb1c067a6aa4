"""Stack definitions: what each ZenML stack is made of, registered idempotently by run.py."""
