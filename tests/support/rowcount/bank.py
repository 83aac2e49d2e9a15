"""row_count, bank role."""

from support.rowcount.roles import count


def train(ctx, data, params, cipher, policy):
    return count(ctx, "bank", data, params)
