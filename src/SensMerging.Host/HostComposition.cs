using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SensMerging.Core.Config;
using SensMerging.Core.Engine;
using SensMerging.Host.Merging;
using SensMerging.Host.Plugins;
using SensMerging.Hub.Client;
using SensMerging.Registry;
using SensMerging.Runtime;

namespace SensMerging.Host;

/// <summary>Builds the Generic Host every command runs in: configuration, logging, options and services.</summary>
public static class HostComposition
{
    /// <param name="settings">Extra configuration from <c>--set key=value</c> and global options, applied last.</param>
    /// <param name="verbose">Debug logging.</param>
    public static IHost Build(IReadOnlyDictionary<string, string?> settings, bool verbose)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            ContentRootPath = AppContext.BaseDirectory,
            DisableDefaults = false,
            Args = [],
        });
        // Signals belong to Cli.ProcessSignals, which cancels the command; the console lifetime would swallow them.
        builder.Services.AddSingleton<IHostLifetime, CommandLifetime>();
        builder.Configuration.AddEnvironmentVariables("SENSMERGE_");
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Logging.ClearProviders();
        // Logs go to stderr so that --json output on stdout stays machine-readable.
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        });
        builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        if (verbose)
        {
            builder.Logging.SetMinimumLevel(LogLevel.Debug);
        }

        builder.Services.AddOptions<SensMergeOptions>()
            .Bind(builder.Configuration.GetSection(SensMergeOptions.Section))
            .ValidateDataAnnotations()
            .ValidateOnStart();
        builder.Services.AddSingleton<PluginLoader>();
        builder.Services.AddSingleton<PluginTemplates>();
        builder.Services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IOptions<SensMergeOptions>>().Value;
            var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger<PluginCatalog>();
            return PluginCatalog.Load(SensMergeOptions.Locate(options.PluginsFile), sp.GetRequiredService<PluginLoader>(), logger);
        });
        // HF_* environment variables first, then the "Hub" section (--set Hub:DownloadTimeout=30, SENSMERGE_Hub__EtagTimeout=30).
        var hubSection = builder.Configuration.GetSection("Hub");
        builder.Services.AddHubClient(o => o.ApplySettings(key => hubSection[key]));
        builder.Services.AddSingleton<HostModelResolver>();
        // The registry decides which services to register, so it is read from the same bound options before the container exists.
        var registryPath = (builder.Configuration.GetSection(SensMergeOptions.Section).Get<SensMergeOptions>() ?? new SensMergeOptions()).RegistryPath;
        if (SensMerging.Registry.Remote.RemoteMergeRegistry.IsRemote(registryPath))
        {
            // A team's shared registry on a sensmerge serve (docs/team-hub.md): SENSMERGE_REGISTRY_TOKEN, else HF_TOKEN.
            builder.Services.AddSingleton<IMergeRegistry>(sp => new SensMerging.Registry.Remote.RemoteMergeRegistry(
                new Uri(registryPath),
                Environment.GetEnvironmentVariable("SENSMERGE_REGISTRY_TOKEN") is { Length: > 0 } t ? t : sp.GetRequiredService<HubOptions>().Token,
                logger: sp.GetService<ILogger<SensMerging.Registry.Remote.RemoteMergeRegistry>>()));
        }
        else
        {
            builder.Services.AddMergeRegistry(o => o.Path = Path.GetFullPath(registryPath));
        }
        builder.Services.AddLlamaRuntime();
        builder.Services.AddSingleton<MergeEngine>();
        builder.Services.AddSingleton<ScoreCache>();
        builder.Services.AddSingleton<MergePipeline>();
        builder.Services.AddSingleton<SensMerging.Host.Serving.Web.RegistryWebUi>();
        builder.Services.AddSingleton<SensMerging.Host.Demo.ModelEvaluator>();
        builder.Services.AddSingleton<SensMerging.Host.Demo.DemoRunner>();
        return builder.Build();
    }
}
