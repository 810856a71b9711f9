"""Hosted checkout: fiat pricing, payment attempts with a locked rate, rates and the pay page."""
