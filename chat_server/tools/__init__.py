"""Counsellor tools: onboarding and account help (later: portfolio, broadcast lists)."""
