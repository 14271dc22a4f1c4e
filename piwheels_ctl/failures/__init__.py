"""Why a build failed and what fixes it: the rules, the classifier, the Debian packages that fix it."""
