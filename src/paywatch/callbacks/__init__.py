"""Status callbacks: Standard Webhooks signing, the retry schedule, the SSRF guard and delivery.

The outbox rows are written by :mod:`paywatch.outbox` with each status change; this package
delivers them (:mod:`.dispatcher`), logs every attempt and offers the admin operations
(:mod:`.admin`) that the API and the CLI share.
"""
