using System.Security.Cryptography;
using System.Text;
using SensMerging.Abstractions;

namespace SensMerging.Registry.Tests;

internal sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "smreg-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal static class Samples
{
    public static readonly string[] Groups = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.layers.2", "model.norm", "lm_head"];

    public static PluginRef Plugin(string component, string version = "1.2.3") =>
        new("sensmerging.plugins." + component, component, version, Sha(component + version), "1.0");

    public static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    /// <summary>Writes files into a model folder and returns them with their real hashes.</summary>
    public static IReadOnlyList<FileHash> WriteModel(string folder, string seed, int bytes = 4096)
    {
        Directory.CreateDirectory(folder);
        var files = new List<FileHash>();
        foreach (var name in new[] { "model.safetensors", "config.json" })
        {
            var data = new byte[name == "config.json" ? 64 : bytes];
            new Random(StringComparer.Ordinal.GetHashCode(seed + name) & 0x7fffffff).NextBytes(data);
            var path = Path.Combine(folder, name);
            File.WriteAllBytes(path, data);
            files.Add(new FileHash(name, Convert.ToHexStringLower(SHA256.HashData(data)), data.Length));
        }
        return files;
    }

    public static CoefficientSet Coefficients(string[] experts, double shift = 0)
    {
        var values = experts.Select((_, e) => Groups.Select((_, g) => 1.0 + (0.1 * (e - 1)) + (0.01 * g) + shift).ToArray()).ToList();
        var alpha = new ScoreTableRecord("alpha", ScorerKind.TaskSpecific, experts, Groups, [.. values.Select(v => v.Select(x => x / 3).ToArray())]);
        var tau = new ScoreTableRecord("tau", ScorerKind.CrossTask, experts, ["tau"], [.. experts.Select((_, i) => new[] { (i + 1) / 6.0 })]);
        return new CoefficientSet { Decorator = "sens", Experts = experts, LayerGroups = Groups, Values = values, Tables = [alpha, tau] };
    }

    /// <summary>A draft with every field that a merge fills before it runs.</summary>
    public static MergeRecord Draft(TempFolder temp, string strategy = "ties", string[]? experts = null, string? baseRef = null, long? seed = 42)
    {
        experts ??= ["org/math@main", "org/code@v1", "./experts/knowledge"];
        var inputs = new List<ModelInput>
        {
            new()
            {
                Name = "base",
                Reference = baseRef ?? "org/base@main",
                RequestedRevision = "main",
                ResolvedCommit = new string('b', 40),
                LocalPath = Path.Combine(temp.Path, "cache", "base"),
                Role = ModelRole.Base,
                Files = WriteModel(Path.Combine(temp.Path, "cache", "base"), "base"),
            },
        };
        foreach (var e in experts)
        {
            var isPath = e.StartsWith('.') || e.StartsWith('/');
            var at = e.IndexOf('@', StringComparison.Ordinal);
            var local = isPath ? Path.GetFullPath(Path.Combine(temp.Path, e)) : Path.Combine(temp.Path, "cache", e.Replace('/', '_').Replace('@', '_'));
            inputs.Add(new ModelInput
            {
                Name = isPath ? Path.GetFileName(e) : (at > 0 ? e[..at] : e).Split('/')[1],
                Reference = e,
                RequestedRevision = isPath ? null : at > 0 ? e[(at + 1)..] : "main",
                ResolvedCommit = isPath ? null : Sha(e)[..40],
                LocalPath = local,
                Role = ModelRole.Expert,
                Files = WriteModel(local, e),
            });
        }
        var names = inputs.Where(i => i.Role == ModelRole.Expert).Select(i => i.Name).ToArray();
        return new MergeRecord
        {
            HostVersion = "0.1.0-test",
            ConfigText = "merge_method: " + strategy + "\nbase_model: " + inputs[0].Reference + "\nmodels:\n" +
                string.Concat(experts.Select(e => "  - model: " + e + "\n    parameters: {weight: 0.5, density: 0.7}\n")) +
                "parameters:\n  lambda: 1.0\n  normalize: true\n",
            ConfigPath = Path.Combine(temp.Path, "merge.yaml"),
            ResolvedConfig = "{\"merge_method\":\"" + strategy + "\"}",
            Strategy = Plugin(strategy),
            Decorators = [new DecoratorRef(Plugin("sens")) { Parameters = new Dictionary<string, ParameterValue> { ["temperature"] = 2.0, ["alignment"] = "alignment" } }],
            Scorers = [Plugin("sensitivity"), Plugin("logit_alignment")],
            Inputs = inputs,
            Seed = seed,
            Dtype = "bfloat16",
            OutDtype = "float16",
            Parameters = new Dictionary<string, ParameterValue>
            {
                ["lambda"] = 1.0,
                ["normalize"] = true,
                ["k"] = 3L,
                ["epsilon"] = 0.1 + 0.2,
                ["tiny"] = 1e-300,
                ["name"] = "x y",
                ["weights"] = ParameterValue.Of([0.25, 0.5, 1.0]),
                ["filters"] = ParameterValue.Of([ParameterValue.Of([KeyValuePair.Create("filter", ParameterValue.Of("self_attn")), KeyValuePair.Create("value", ParameterValue.Of(0.3))])]),
            },
            ModelParameters = names.ToDictionary(n => n, n => (IReadOnlyDictionary<string, ParameterValue>)new Dictionary<string, ParameterValue> { ["weight"] = 0.5, ["density"] = 0.7 }),
            DecoratorSettings = new Dictionary<string, IReadOnlyDictionary<string, ParameterValue>>
            {
                ["sens"] = new Dictionary<string, ParameterValue> { ["temperature"] = 2.0, ["task_scorer"] = "sensitivity", ["use_tau"] = true },
            },
            Tags = ["test", "ablation:none"],
        };
    }

    /// <summary>Writes an output folder with real files and returns its description.</summary>
    public static MergeOutputs Outputs(string folder, string seed, string? repoId = null)
    {
        var files = WriteModel(folder, seed, 8192);
        return new MergeOutputs { Folder = folder, Files = files, TotalBytes = files.Sum(f => f.Size), TensorCount = 12, RepoId = repoId };
    }

    public static ScoreTableRecord Sensitivity(string[] experts) =>
        new("sensitivity", ScorerKind.TaskSpecific, experts, Groups, [.. experts.Select((_, e) => Groups.Select((_, g) => (e + 1) * 0.123456789012345 + g).ToArray())])
        {
            Details = new Dictionary<string, double> { ["samples"] = 10, ["seconds"] = 1.5 },
        };

    /// <summary>Begins, fills scores and coefficients, and completes a merge.</summary>
    public static async Task<MergeRecord> CompletedAsync(IMergeRegistry registry, TempFolder temp, MergeRecord draft, string outName, string? repoId = null)
    {
        var begun = await registry.BeginAsync(draft);
        var experts = draft.Inputs.Where(i => i.Role == ModelRole.Expert).Select(i => i.Name).ToArray();
        await registry.UpdateAsync(begun.Id, r => r with { ScoreTables = [Sensitivity(experts)], Coefficients = Coefficients(experts) });
        return await registry.CompleteAsync(begun.Id, Outputs(Path.Combine(temp.Path, outName), outName, repoId),
            new Dictionary<string, double> { [Phases.Resolve] = 0.5, [Phases.Scoring] = 2.25, [Phases.Merge] = 3.0, [Phases.Hashing] = 0.25 });
    }

    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SensMerging.Host.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root not found above " + AppContext.BaseDirectory);
    }
}
