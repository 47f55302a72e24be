using System.Globalization;
using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Host.Plugins;
using SensMerging.Registry;
using RegistryValue = SensMerging.Registry.ParameterValue;

namespace SensMerging.Host.Merging;

/// <summary>
/// A merge's provenance: the registry record it starts with, the scores and coefficients its decorators add, the
/// inputs' file hashes, and the model card written beside the weights. Everything here maps facts the pipeline already
/// has (config, <see cref="ResolvedInputs"/>, plugin versions, reports); nothing is derived again.
/// </summary>
internal sealed class MergeProvenance(PluginCatalog plugins)
{
    /// <summary>The record a merge starts with (status running): config, pinned inputs, plugins, parameters, dtypes, seed.</summary>
    public MergeRecord Draft(
        MergeRunRequest request, string configText, MergeConfig config, IMergeStrategy strategy, ResolvedInputs inputs,
        IReadOnlyList<ModelInput> inputRecords, long seed, string workPath)
    {
        return new MergeRecord
        {
            HostVersion = MergePipeline.HostVersion,
            ConfigText = configText,
            ConfigPath = Path.GetFullPath(request.ConfigPath),
            ResolvedConfig = ResolvedConfigText(config, inputs, seed),
            Strategy = PluginRefOf(ComponentKind.Strategy, strategy.Name),
            Decorators = [.. config.Decorators.Select(d => new DecoratorRef(PluginRefOf(ComponentKind.Decorator, d.Name))
            {
                Parameters = d.Parameters.ToDictionary(kv => kv.Key, kv => Recorded(kv.Value), StringComparer.Ordinal),
            })],
            Inputs = inputRecords,
            Seed = seed,
            Dtype = config.Dtype,
            OutDtype = request.OutputDType ?? config.OutDtype,
            ComputeDtype = request.ComputeInFloat32 ? MergeRunRequest.Float32Compute : null,
            Parameters = config.Parameters.ToDictionary(kv => kv.Key, kv => Recorded(kv.Value), StringComparer.Ordinal),
            ModelParameters = config.Models.ToDictionary(
                m => m.Model.Text,
                m => (IReadOnlyDictionary<string, RegistryValue>)m.Parameters.ToDictionary(kv => kv.Key, kv => Recorded(kv.Value), StringComparer.Ordinal),
                StringComparer.Ordinal),
            Tags = request.Tags,
            PartialFolder = workPath,
        };
    }

    /// <summary>The registry's view of the inputs: files with the size and SHA-256 of what the merge reads (<see cref="FileHashing"/>).</summary>
    public static async Task<IReadOnlyList<ModelInput>> DescribeInputsAsync(ResolvedInputs inputs, HostModelResolver resolver, CancellationToken cancellationToken)
    {
        var records = new List<ModelInput>();
        foreach (var model in inputs.Resolved)
        {
            var isBase = inputs.IsBase(model);
            // A model+adapter reference is two inputs: the model (named by the whole reference) and its adapter, each with
            // its own reference text, commit and files, so reproduce pins both sides of the '+'.
            foreach (var (part, name) in model.Adapter is { } adapter
                ? new[] { (model with { Reference = model.Reference.WithoutLora() }, model.Reference.Text), (adapter, model.Reference.Text + " (LoRA adapter)") }
                : [(model, model.Reference.Text)])
            {
                records.Add(new ModelInput
                {
                    Name = name,
                    Reference = part.Reference.Text,
                    RequestedRevision = part.Reference.Revision,
                    ResolvedCommit = part.Commit,
                    LocalPath = part.LocalPath,
                    Role = isBase ? ModelRole.Base : ModelRole.Expert,
                    Files = await FileHashing.DescribeAsync(part.LocalPath, resolver.VerifiedSha256(part.LocalPath), cancellationToken),
                });
            }
        }
        return records;
    }

    private PluginRef PluginRefOf(ComponentKind kind, string name)
    {
        var plugin = plugins.PluginOf(kind, name);
        return new PluginRef(plugin.Id, name, plugin.Version ?? "", plugin.AssemblySha256 ?? "", plugin.ContractVersion ?? "");
    }

    /// <summary>
    /// Scores and coefficients, each table once: <c>scoreTables</c> holds what the scorers returned (under the scorers' names,
    /// with their details) and the tables of decorators that set no coefficients; the coefficients' decorator's own tables
    /// (alpha, tau, sigma...) go with the coefficients, and a table a decorator only renamed from a scorer's is not repeated.
    /// </summary>
    public MergeRecord WithReports(MergeRecord record, PreparedStrategy prepared)
    {
        var coefficients = prepared.Reports
            .Select(r => (Report: r, Table: r.Tables.FirstOrDefault(t => t.Scorer == "coefficients")))
            .LastOrDefault(x => x.Table is not null);
        var scorerTables = prepared.ScorerTables.Distinct().Select(ScoreTableRecord.From).ToList();
        var tables = new List<ScoreTableRecord>(scorerTables);
        var intermediates = new List<ScoreTableRecord>();
        foreach (var report in prepared.Reports)
        {
            foreach (var table in report.Tables.Where(t => !ReferenceEquals(t, coefficients.Table)))
            {
                var stored = ScoreTableRecord.From(table);
                if (!scorerTables.Any(stored.SameNumbers))
                {
                    (ReferenceEquals(report, coefficients.Report) ? intermediates : tables).Add(stored);
                }
            }
        }
        return record with
        {
            ScoreTables = tables,
            Scorers = [.. prepared.ScorersUsed.Select(s => PluginRefOf(ComponentKind.Scorer, s))],
            Coefficients = coefficients.Table is null ? null : new CoefficientSet
            {
                Decorator = coefficients.Report.Decorator,
                Experts = coefficients.Table.Rows,
                LayerGroups = coefficients.Table.Columns,
                Values = coefficients.Table.Values,
                Tables = intermediates,
            },
            DecoratorSettings = prepared.Reports.ToDictionary(
                r => r.Decorator,
                r => (IReadOnlyDictionary<string, RegistryValue>)r.Settings.ToDictionary(kv => kv.Key, kv => RegistryValue.FromObject(kv.Value), StringComparer.Ordinal),
                StringComparer.Ordinal),
        };
    }

    /// <summary>A config parameter as the registry stores it: scalars as values, gradients as lists, filters as lists of {filter, value}.</summary>
    private static RegistryValue Recorded(SensMerging.Core.Config.ParameterValue value) => value switch
    {
        ScalarParameter s => RegistryValue.FromObject(s.Value),
        GradientParameter g => RegistryValue.Of(g.Values.Select(RegistryValue.FromObject)),
        FilteredParameter f => RegistryValue.Of(f.Entries.Select(e => RegistryValue.Of(new Dictionary<string, RegistryValue>
        {
            ["filter"] = e.Filter is null ? RegistryValue.Null : RegistryValue.Of(e.Filter),
            ["value"] = Recorded(e.Value),
        }))),
        _ => RegistryValue.Of(value.ToString() ?? string.Empty),
    };

    private static string ResolvedConfigText(MergeConfig config, ResolvedInputs inputs, long seed)
    {
        var lines = new List<string>
        {
            $"merge_method: {config.MergeMethod}",
            $"seed: {seed.ToString(CultureInfo.InvariantCulture)}",
        };
        if (config.BaseModel is not null)
        {
            lines.Add($"base_model: {Pinned(config.BaseModel, inputs)}");
        }
        lines.Add("models:");
        lines.AddRange(config.Models.Select(m => $"  - model: {Pinned(m.Model, inputs)}"));
        return string.Join('\n', lines) + "\n";
    }

    private static string Pinned(ModelReference reference, ResolvedInputs inputs)
    {
        var resolved = inputs.ResolvedOf(reference);
        var model = resolved.Commit is null ? resolved.LocalPath : $"{reference.Repo}@{resolved.Commit}";
        return resolved.Adapter is not { } adapter ? model
            : model + "+" + (adapter.Commit is null ? adapter.LocalPath : $"{adapter.Reference.Repo}@{adapter.Commit}");
    }

    public static ModelCard Card(MergeConfig config, string recordId, PreparedStrategy prepared, ResolvedInputs inputs, long seed)
    {
        var inputsList = new List<ModelCardInput>();
        if (inputs.Base is not null)
        {
            inputsList.Add(new ModelCardInput(Pinned(config.BaseModel!, inputs), "base"));
        }
        inputsList.AddRange(inputs.Experts.Select(e => new ModelCardInput(Pinned(inputs.Resolved.First(r => r.Reference.Text == e.Name).Reference, inputs), "expert")));
        var parameters = config.Parameters.Select(kv => new KeyValuePair<string, string>(kv.Key, kv.Value.ToString() ?? "")).ToList();
        parameters.Add(new("seed", seed.ToString(CultureInfo.InvariantCulture)));
        var body = $"Registry record: `{recordId}` (`sensmerge registry show {recordId}`).\n";
        foreach (var report in prepared.Reports)
        {
            body += $"\nDecorator `{report.Decorator}`: " + string.Join(", ", report.Settings.Select(kv => $"{kv.Key}={Convert.ToString(kv.Value, CultureInfo.InvariantCulture)}")) + "\n";
        }
        return new ModelCard
        {
            Title = config.Name ?? $"{prepared.Strategy.Name} merge",
            Method = prepared.Strategy.Name,
            Inputs = inputsList,
            Parameters = parameters,
            BodyMarkdown = body,
            Tags = ["merge", "sensmerging", config.MergeMethod, $"sensmerge-registry:{recordId}"],
        };
    }
}
