from gan_modules.steps import logs_this_batch  # noqa: F401  (moved; removed once gan.py/autoencoder.py import from steps)
