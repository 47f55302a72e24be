using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;

namespace SensMerging.Host.Plugins;

/// <summary>One kind of plugin project the templates in <c>docs/plugin-templates</c> generate.</summary>
/// <param name="Kind">What <c>sensmerge plugins new</c> calls it.</param>
/// <param name="Folder">The template's folder under the templates folder.</param>
/// <param name="ShortName">The template's <c>dotnet new</c> short name.</param>
/// <param name="Summary">One line for help and errors.</param>
public sealed record PluginTemplateKind(string Kind, string Folder, string ShortName, string Summary);

/// <summary>The result of <see cref="PluginTemplates.CreateAsync"/>.</summary>
/// <param name="Folder">The generated folder (absolute).</param>
/// <param name="ComponentName">The component's Name (what merge_method or decorators[].name names).</param>
/// <param name="PluginId">The plugin id written to plugin.json.</param>
/// <param name="ContractVersion">The SensMerging.Abstractions package version the projects reference.</param>
public sealed record CreatedPlugin(string Folder, string ComponentName, string PluginId, string ContractVersion);

/// <summary>
/// <c>sensmerge plugins new</c>: generates a plugin project from the <c>dotnet new</c> templates shipped beside the host
/// (<c>plugin-templates/</c>, copied from <c>docs/plugin-templates</c>). The templates are installed into a private,
/// temporary template hive, so the user's own <c>dotnet new</c> template list is left as it was.
/// </summary>
public sealed partial class PluginTemplates
{
    /// <summary>The kinds, in the order help lists them.</summary>
    public static IReadOnlyList<PluginTemplateKind> Kinds { get; } =
    [
        new("strategy", "strategy", "sensmerge-strategy", "an elementwise merge strategy"),
        new("streaming-strategy", "streaming-strategy", "sensmerge-streaming-strategy", "a merge strategy that needs whole-tensor statistics and streams them"),
        new("scorer", "scorer", "sensmerge-scorer", "a task-specific scorer (per expert and layer group)"),
        new("decorator", "decorator", "sensmerge-decorator", "a strategy decorator that steers any strategy's weights"),
    ];

    /// <summary>The package version of the contract this host defines (what a new plugin references by default).</summary>
    public static string DefaultContractVersion => PluginContract.Version + ".0";

    private readonly ILogger<PluginTemplates> _logger;
    private readonly string _templatesFolder;

    public PluginTemplates(ILogger<PluginTemplates> logger)
        : this(logger, Path.Combine(AppContext.BaseDirectory, "plugin-templates"))
    {
    }

    public PluginTemplates(ILogger<PluginTemplates> logger, string templatesFolder)
    {
        _logger = logger;
        _templatesFolder = templatesFolder;
    }

    /// <summary>The kind named <paramref name="kind"/>; throws naming the kinds there are when it is unknown.</summary>
    public static PluginTemplateKind Find(string kind) =>
        Kinds.FirstOrDefault(k => string.Equals(k.Kind, kind, StringComparison.Ordinal))
        ?? throw new ArgumentException($"unknown plugin kind '{kind}'; the kinds are {string.Join(", ", Kinds.Select(k => k.Kind))}");

    /// <summary>
    /// The lower_snake_case form of a project name, as the templates derive the component's Name from it
    /// (<c>AcmeMedian</c> gives <c>acme_median</c>); <paramref name="separator"/> "-" gives the plugin id.
    /// </summary>
    public static string DerivedName(string name, string separator = "_")
    {
        ArgumentNullException.ThrowIfNull(name);
        var words = WordBreak().Replace(name, "$1_$2");
        return NonAlphanumeric().Replace(words, "_").ToLowerInvariant().Replace("_", separator, StringComparison.Ordinal);
    }

    /// <summary>
    /// Generates a <paramref name="kind"/> plugin named <paramref name="name"/> into <paramref name="outputFolder"/>
    /// (default: ./NAME), referencing contract package <paramref name="contractVersion"/> from the folder feed
    /// <paramref name="feed"/> (default: the template's, ../sensmerge-feed) through the generated nuget.config.
    /// </summary>
    public async Task<CreatedPlugin> CreateAsync(string kind, string name, string? outputFolder, string? contractVersion, string? feed, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(name);
        var template = Find(kind);
        if (!ProjectName().IsMatch(name))
        {
            throw new ArgumentException($"plugin name '{name}' is not a C# name: use letters, digits and dots, starting with a letter (for example AcmeMedian); it becomes the project, namespace and class name");
        }
        var output = Path.GetFullPath(outputFolder ?? name);
        if (File.Exists(output))
        {
            throw new IOException($"{output} is a file; choose another --out");
        }
        if (Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any())
        {
            throw new IOException($"{output} exists and is not empty; choose another --out (nothing was written)");
        }
        var templateFolder = Path.Combine(_templatesFolder, template.Folder);
        if (!File.Exists(Path.Combine(templateFolder, ".template.config", "template.json")))
        {
            throw new DirectoryNotFoundException($"the {template.Kind} template is not in {templateFolder} (the host ships it as plugin-templates/; from the repository: dotnet new install docs/plugin-templates)");
        }
        var version = contractVersion ?? DefaultContractVersion;
        var hive = Path.Combine(Path.GetTempPath(), "sensmerge-template-hive-" + Guid.NewGuid().ToString("N"));
        try
        {
            await DotnetNewAsync(["install", templateFolder, "--debug:custom-hive", hive], cancellationToken).ConfigureAwait(false);
            List<string> args = [template.ShortName, "-n", name, "-o", output, "--ContractVersion", version, "--debug:custom-hive", hive];
            if (feed is not null)
            {
                args.AddRange(["--ContractFeed", Path.GetFullPath(feed)]);
            }
            await DotnetNewAsync(args, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (Directory.Exists(hive))
            {
                Directory.Delete(hive, recursive: true);
            }
        }
        var created = new CreatedPlugin(output, DerivedName(name), DerivedName(name, "-"), version);
        LogCreated(template.Kind, name, output, created.ComponentName, created.PluginId, version);
        return created;
    }

    /// <summary>Runs <c>dotnet new ARGS</c> with the SDK that runs this host when it runs under <c>dotnet</c>, else the one on PATH.</summary>
    private static async Task DotnetNewAsync(IReadOnlyList<string> args, CancellationToken cancellationToken)
    {
        var dotnet = Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("new");
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("cannot start dotnet");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException($"cannot run 'dotnet new' ({ex.Message}); the .NET SDK is needed to create a plugin", ex);
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
            var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
            try
            {
                await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw;
            }
            if (process.ExitCode != 0)
            {
                var text = new StringBuilder().Append(await stdout.ConfigureAwait(false)).Append(await stderr.ConfigureAwait(false)).ToString().Trim();
                throw new InvalidOperationException($"dotnet new {string.Join(' ', args)} failed ({process.ExitCode}): {text}");
            }
        }
    }

    [GeneratedRegex("([a-z0-9])([A-Z])")]
    private static partial Regex WordBreak();

    [GeneratedRegex("[^A-Za-z0-9]+")]
    private static partial Regex NonAlphanumeric();

    [GeneratedRegex(@"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")]
    private static partial Regex ProjectName();

    [LoggerMessage(EventId = 111, Level = LogLevel.Information, Message = "created {Kind} plugin {Name} in {Folder}: component {Component}, plugin id {PluginId}, contract package {Version}")]
    private partial void LogCreated(string kind, string name, string folder, string component, string pluginId, string version);
}
