"""Settings for the test suite: the same as production, with faster durability knobs."""
from .base import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# WhiteNoise looks a static file up when it is asked for, instead of listing STATIC_ROOT
# each time a test's client loads the middleware (every test with a client: some 30 ms
# for the ~170 files collectstatic leaves there). What it serves, and the headers, stay
# the same (max-age stays 60: DEBUG is off).
WHITENOISE_AUTOREFRESH = True
