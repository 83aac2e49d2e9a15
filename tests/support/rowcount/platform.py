"""row_count, platform role."""

from support.rowcount.roles import count


def train(ctx, data, params, cipher, policy):
    return count(ctx, "platform", data, params)
