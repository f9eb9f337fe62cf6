"""The UCI/Boston housing schema, shared by training (column order) and serving (request keys)."""

# The 13 input columns of housing.data, in file order; the 14th is MEDV, the price in $1000s.
FEATURE_NAMES = ("CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT")
TARGET_NAME = "MEDV"
