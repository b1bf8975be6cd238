"""Supernet validator: follows batch commits, samples receipts, re-checks them, challenges and votes.

The service entry point is `supernet.validator.service.Validator`; the CLI is
``supernet validator run`` (`supernet.validator.cli`). Verification is documented in
``docs/validator.md``.
"""
