import FerretPluginABI

/// The plugin ABI this host speaks, "major.minor".
public let abiVersion = "\(FERRET_ABI_MAJOR).\(FERRET_ABI_MINOR)"

/// The agent's version (the CLI's `--version`, the OTLP instrumentation scope).
public let ferretVersion = "0.1.0"
