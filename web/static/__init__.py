"""The dashboard's static files (a package so setuptools ships them as its data)."""
