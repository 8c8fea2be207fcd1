import FerretPluginABI

/// The plugin ABI this host speaks, "major.minor".
public let abiVersion = "\(FERRET_ABI_MAJOR).\(FERRET_ABI_MINOR)"
