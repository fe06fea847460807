"""Pure rules of keyturn: models, policy, the rotation decision, errors and ports.

Standard library only. The clock and randomness are handed in through the ports.
"""
