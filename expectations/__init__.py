"""Great Expectations suites as plain JSON files, one folder per database.

This folder is a package only so that its suites ship inside drillbook
(`drillbook.expectations`) and are found with importlib.resources: the demo's
suite (demo-orders/) works the same from a checkout and from an installed wheel.
"""
