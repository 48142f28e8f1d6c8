"""Metering: token counts, prices, cost, budgets, quotas and spend alerts."""
