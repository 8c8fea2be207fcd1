import FerretAggregators
import FerretCore
import SinkConsole
import SinkDashboard
import SinkInfluxDB
import SinkJSONL
import SinkOTLP
import SinkPprofDir
import SinkPrometheus
import SinkStatsD
import SinkWebhook

/// Every pipeline component the agent is built with, by the name configs use
/// (like Telegraf's `plugins/outputs/all`). Adding a sink is a folder under
/// Sources/Sinks, its name in Package.swift's `sinkFolders` and one line here
/// (docs/adding-a-sink.md).
public enum FerretComponents {
    public static let all = Components(
        sinks: [
            "console": ConsoleSink.sinkType,
            "jsonl": JSONLSink.sinkType,
            "pprof_dir": PprofDirSink.sinkType,
            "influxdb": InfluxDBSink.sinkType,
            "webhook": WebhookSink.sinkType,
            "otlp": OTLPSink.sinkType,
            "prometheus": PrometheusSink.sinkType,
            "dashboard": DashboardSink.sinkType,
            "statsd": StatsDSink.sinkType,
        ],
        aggregators: [
            "window": WindowAggregator.aggregatorType,
            "rate": RateAggregator.aggregatorType,
            "group": GroupAggregator.aggregatorType,
            "goroutine_leak": GoroutineLeakDetector.aggregatorType,
            "threshold": ThresholdAggregator.aggregatorType,
            "anomaly": AnomalyDetector.aggregatorType,
        ])
}
