"""Engine bundles shipped with pdd; the default lives in a subfolder here."""
