"""Online-safety alerts (SPEC §5.5): rules over Verdicts (pure), the incident log in the store, and
delivery by email and webhook from a persisted outbox. Fed by the verdict bus; never on the request path."""
