# Ops staff compare runs second by second: the admin and pages show times to the second
# (Django's English default stops at minutes).
DATETIME_FORMAT = "N j, Y, H:i:s"
TIME_FORMAT = "H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
