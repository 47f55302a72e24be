using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace SensMerging.Host.Cli;

/// <summary>The <c>sensmerge</c> command line: global options, the command tree, and how a command runs in the host.</summary>
public static class CliApp
{
    public static readonly Option<string?> PluginsOption = new("--plugins") { Description = "plugins.json to load (default: ./plugins.json, else beside the executable)", Recursive = true };
    public static readonly Option<string?> RegistryOption = new("--registry") { Description = "Merge registry file (default: registry/merges.db), or a team's shared registry http(s)://host:port (also SENSMERGE_REGISTRY)", Recursive = true };
    public static readonly Option<string[]> SetOption = new("--set") { Description = "Configuration override KEY=VALUE (e.g. SensMerge:Device=cuda)", Recursive = true, AllowMultipleArgumentsPerToken = false };
    public static readonly Option<bool> VerboseOption = new("--verbose", "-v") { Description = "Debug logging", Recursive = true };

    /// <summary>
    /// Runs the command line with SIGINT/SIGTERM wired to the command's cancellation token (<see cref="ProcessSignals"/>):
    /// a command cancelled by a signal exits 130 (SIGINT) or 143 (SIGTERM).
    /// </summary>
    public static async Task<int> InvokeAsync(string[] args)
    {
        using var signals = ProcessSignals.Register(Console.Error);
        var exitCode = await Create().Parse(args).InvokeAsync(cancellationToken: signals.Token);
        return signals.ExitCode(exitCode);
    }

    /// <summary>A fresh <c>--max-memory</c> option for the commands that score (merge with a decorator, scores).</summary>
    public static Option<string?> MaxMemoryOption() => new("--max-memory")
    {
        Description = "Memory budget for each model the scorers load, e.g. 8GiB or 500MB (default: SensMerge:MaxMemory, none); a larger model is streamed from its files block by block",
    };

    /// <summary>
    /// Where the scorers run: <paramref name="device"/>'s value or <c>SensMerge:Device</c>, and the memory budget from
    /// <paramref name="maxMemory"/> or <c>SensMerge:MaxMemory</c> (parsed as a size; a bad size is an error naming it).
    /// </summary>
    public static Merging.ScoringDevice ScoringDevice(ParseResult parse, Option<string?> device, Option<string?> maxMemory, IServiceProvider services)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(services);
        var options = services.GetRequiredService<IOptions<SensMergeOptions>>().Value;
        var budget = parse.GetValue(maxMemory) ?? options.MaxMemory;
        long? bytes = null;
        if (!string.IsNullOrWhiteSpace(budget))
        {
            try
            {
                bytes = Core.SafeTensors.ByteSize.Parse(budget);
            }
            catch (FormatException ex)
            {
                throw new ArgumentException($"--max-memory / SensMerge:MaxMemory: {ex.Message}", ex);
            }
        }
        return new Merging.ScoringDevice(parse.GetValue(device) ?? options.Device, bytes);
    }

    public static RootCommand Create()
    {
        var root = new RootCommand("sensmerge: merge fine-tuned LLMs with pluggable strategies and Sens-Merging, with provenance.")
        {
            PluginsOption, RegistryOption, SetOption, VerboseOption,
        };
        root.Add(PluginsCommand.Create());
        root.Add(MergeCommand.Create());
        root.Add(ScoresCommand.Create());
        root.Add(ExtractLoraCommand.Create());
        root.Add(RegistryCommand.Create());
        root.Add(HubCommand.Create());
        root.Add(ServeCommand.Create());
        root.Add(TokensCommand.Create());
        root.Add(DemoCommands.Zoo());
        root.Add(DemoCommands.Eval());
        root.Add(DemoCommands.Demo());
        return root;
    }

    /// <summary>Runs a command body inside a started Generic Host; maps failures to one clear line and an exit code.</summary>
    public static async Task<int> RunInHostAsync(ParseResult parse, Func<IServiceProvider, CancellationToken, Task<int>> body, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(body);
        try
        {
            using var host = HostComposition.Build(Settings(parse), parse.GetValue(VerboseOption));
            await host.StartAsync(cancellationToken);
            var threads = host.Services.GetRequiredService<IOptions<SensMergeOptions>>().Value.TorchThreads;
            if (threads > 0)
            {
                TorchSharp.torch.set_num_threads(threads);
            }
            try
            {
                return await body(host.Services, cancellationToken);
            }
            finally
            {
                await host.StopAsync(CancellationToken.None);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await Console.Error.WriteLineAsync("sensmerge: cancelled");
            return ExitCodes.Cancelled;
        }
        catch (OptionsValidationException ex)
        {
            await Console.Error.WriteLineAsync($"sensmerge: invalid settings: {string.Join("; ", ex.Failures)}");
            return ExitCodes.InvalidSettings;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            await Console.Error.WriteLineAsync($"sensmerge: error: {ex.Message}");
            if (parse.GetValue(VerboseOption))
            {
                await Console.Error.WriteLineAsync(ex.ToString());
            }
            return ExitCodes.Error;
        }
    }

    private static Dictionary<string, string?> Settings(ParseResult parse)
    {
        var settings = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        foreach (var pair in parse.GetValue(SetOption) ?? [])
        {
            var eq = pair.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                throw new ArgumentException($"--set expects KEY=VALUE, got '{pair}'");
            }
            settings[pair[..eq]] = pair[(eq + 1)..];
        }
        if (parse.GetValue(PluginsOption) is { } plugins)
        {
            settings[$"{SensMergeOptions.Section}:{nameof(SensMergeOptions.PluginsFile)}"] = Path.GetFullPath(plugins);
        }
        // --registry FILE, or a shared registry: --registry http(s)://host:port or SENSMERGE_REGISTRY (docs/team-hub.md).
        if ((parse.GetValue(RegistryOption) ?? Environment.GetEnvironmentVariable("SENSMERGE_REGISTRY")) is { Length: > 0 } registry)
        {
            settings[$"{SensMergeOptions.Section}:{nameof(SensMergeOptions.RegistryPath)}"] =
                SensMerging.Registry.Remote.RemoteMergeRegistry.IsRemote(registry) ? registry : Path.GetFullPath(registry);
        }
        return settings;
    }
}
