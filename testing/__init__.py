"""Scaffolding for the demo, the tests and the bench (as `prefect.testing` is Prefect's).

Nothing here is a drill step: a sample application database (`sample`), a real
S3 protocol server on loopback and the `litestream replicate` helper (`s3`),
and a Slack Web API stand-in that records what it receives (`slack_standin`).
"""
