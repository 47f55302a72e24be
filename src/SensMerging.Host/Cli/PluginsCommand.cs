using System.CommandLine;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Host.Plugins;
using Spectre.Console;

namespace SensMerging.Host.Cli;

/// <summary><c>sensmerge plugins list [--json]</c> and <c>sensmerge plugins new KIND NAME [--out DIR]</c>.</summary>
public static class PluginsCommand
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "Print JSON (documented in docs/plugins.md)" };
        var list = new Command("list", "Every plugin: id, kind, version, contract, source, status and reason, and its parameters; with -v the stack trace of every failed load") { json };
        list.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, (services, _) =>
        {
            var catalog = services.GetRequiredService<PluginCatalog>();
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(ToJson(catalog), JsonOutput.Options));
            }
            else
            {
                WriteTable(catalog);
                if (parse.GetValue(CliApp.VerboseOption))
                {
                    WriteFailures(catalog);
                }
            }
            return Task.FromResult(0);
        }, ct));
        return new Command("plugins", "Inspect the plugins the host discovers, or start a new one") { list, New() };
    }

    private static Command New()
    {
        var kinds = string.Join("; ", PluginTemplates.Kinds.Select(k => $"{k.Kind}: {k.Summary}"));
        var kind = new Argument<string>("kind") { Description = $"What to create ({kinds})" };
        var name = new Argument<string>("name") { Description = "Project, namespace and class name (e.g. AcmeMedian); the component is named acme_median, the plugin acme-median" };
        var output = new Option<string?>("--out", "-o") { Description = "Folder to create (default: ./NAME); must not exist or be empty" };
        var contract = new Option<string?>("--contract-version") { Description = $"SensMerging.Abstractions package version to reference (default: {PluginTemplates.DefaultContractVersion}, this host's contract)" };
        var feed = new Option<string?>("--feed") { Description = "Folder holding the packed contract, written to the project's nuget.config (default: ../sensmerge-feed beside the project)" };
        var command = new Command("new", "Create a plugin project (plugin + xunit test, local nuget.config) from the dotnet new templates") { kind, name, output, contract, feed };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var created = await services.GetRequiredService<PluginTemplates>().CreateAsync(
                parse.GetValue(kind)!, parse.GetValue(name)!, parse.GetValue(output), parse.GetValue(contract), parse.GetValue(feed), token);
            Console.Out.WriteLine($"created {created.Folder}: component '{created.ComponentName}', plugin id '{created.PluginId}', contract package {created.ContractVersion}");
            Console.Out.WriteLine("next: dotnet pack src/SensMerging.Abstractions -o <the feed in its nuget.config> (a new -p:PackageVersion for every repack),");
            Console.Out.WriteLine($"      dotnet test {created.Folder}, then copy {Path.Combine(created.Folder, "src", parse.GetValue(name)!, "bin", "Release", "net10.0")} (after dotnet build -c Release) into a plugins.json search path");
            return 0;
        }, ct));
        return command;
    }

    internal static PluginListJson ToJson(PluginCatalog catalog) => new(
        catalog.SourceFile,
        PluginContract.Version,
        catalog.Plugins.Select(p => new PluginJson(
            p.Id,
            p.Components.Select(c => c.Kind.ToString().ToLowerInvariant()).Distinct().ToList(),
            p.Version,
            p.ContractVersion,
            p.Description,
            p.Source,
            p.Status.ToString(),
            p.Reason,
            p.AssemblySha256,
            p.Components.Select(c => new ComponentJson(
                c.Kind.ToString().ToLowerInvariant(),
                c.Name,
                c.Instance.Description,
                c.Instance.Parameters.Select(s => new ParameterJson(
                    s.Name, s.Kind.ToString().ToLowerInvariant(), s.Default, ScopeText(s),
                    s.Minimum, s.Maximum, s.AllowedValues.Count > 0 ? s.AllowedValues : null, s.Description)).ToList())).ToList())).ToList());

    /// <summary>The stack trace behind every refused plugin that has one (for plugin authors; shown with -v).</summary>
    private static void WriteFailures(PluginCatalog catalog)
    {
        foreach (var p in catalog.Plugins.Where(p => p.Failure is not null))
        {
            Console.Out.WriteLine();
            Console.Out.WriteLine($"{p.Id} ({p.Status}) at {p.Source}:");
            Console.Out.WriteLine(p.Failure);
        }
    }

    private static void WriteTable(PluginCatalog catalog)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var header in new[] { "Id", "Kind", "Version", "Contract", "Status", "Source", "Reason" })
        {
            table.AddColumn(header);
        }
        foreach (var p in catalog.Plugins)
        {
            var kinds = string.Join(",", p.Components.Select(c => c.Kind.ToString().ToLowerInvariant()).Distinct());
            var status = p.Status == PluginStatus.Loaded ? "[green]Loaded[/]" : $"[yellow]{p.Status}[/]";
            table.AddRow(Markup.Escape(p.Id), kinds, Markup.Escape(p.Version ?? "-"), Markup.Escape(p.ContractVersion ?? "-"), status, Markup.Escape(p.Source), Markup.Escape(p.Reason ?? ""));
        }
        AnsiConsole.Write(table);
        foreach (var (component, plugin) in new[] { ComponentKind.Strategy, ComponentKind.Scorer, ComponentKind.Decorator }.SelectMany(catalog.Components))
        {
            AnsiConsole.MarkupLine($"[bold]{component.Kind.ToString().ToLowerInvariant()} {Markup.Escape(component.Name)}[/] ({Markup.Escape(plugin.Id)} {Markup.Escape(plugin.Version ?? "")}): {Markup.Escape(component.Instance.Description)}");
            foreach (var s in component.Instance.Parameters)
            {
                var range = s.Minimum is not null || s.Maximum is not null ? $" [[{s.Minimum?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? ""}..{s.Maximum?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? ""}]]" : "";
                var choices = s.AllowedValues.Count > 0 ? $" one of {string.Join("|", s.AllowedValues)}" : "";
                AnsiConsole.MarkupLine($"    {Markup.Escape(s.Name)}: {s.Kind.ToString().ToLowerInvariant()}, {ScopeText(s)}, default {Markup.Escape(s.Default?.ToString() ?? "(required)")}{range}{Markup.Escape(choices)} - {Markup.Escape(s.Description)}");
            }
        }
    }

    /// <summary>A parameter's scope as listed: per-model, per-layer-group (a decorator's, contract 1.6) or global.</summary>
    private static string ScopeText(ParameterSpec spec) =>
        spec.Scope == ParameterScope.PerModel ? "per-model" : spec.PerLayerGroup ? "per-layer-group" : "global";
}

internal sealed record PluginListJson(string? PluginsFile, string HostContractVersion, IReadOnlyList<PluginJson> Plugins);

internal sealed record PluginJson(
    string Id, IReadOnlyList<string> Kinds, string? Version, string? ContractVersion, string? Description, string Source,
    string Status, string? Reason, string? AssemblySha256, IReadOnlyList<ComponentJson> Components);

internal sealed record ComponentJson(string Kind, string Name, string Description, IReadOnlyList<ParameterJson> Parameters);

internal sealed record ParameterJson(
    string Name, string Type, object? Default, string Scope, double? Minimum, double? Maximum, IReadOnlyList<string>? AllowedValues, string Description);
