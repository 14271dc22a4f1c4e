from setuptools import setup

print "hello"

setup()
