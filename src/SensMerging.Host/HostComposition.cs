using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SensMerging.Host.Plugins;

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
        builder.Services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IOptions<SensMergeOptions>>().Value;
            var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger<PluginCatalog>();
            return PluginCatalog.Load(SensMergeOptions.Locate(options.PluginsFile), sp.GetRequiredService<PluginLoader>(), logger);
        });
        return builder.Build();
    }
}
