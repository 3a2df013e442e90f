def hello():
    return "hello from priv"
