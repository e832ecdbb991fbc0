"""Developer tools run from a checkout, not shipped in the package: the bundle's release check
(``make bundle-check``) and the console screenshot (``make screenshot``)."""
