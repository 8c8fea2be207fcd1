/* Header-only target: see include/ferret_plugin.h. */
