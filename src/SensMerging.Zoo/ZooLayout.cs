namespace SensMerging.Zoo;

/// <summary>
/// Where a zoo lives under its root folder: Hub repositories in <c>repos/zoo/{model}</c> (the Hub server serves
/// <c>repos/</c> directly as <c>org/name</c>), task data in <c>data/{task}/</c>, and the manifest <c>zoo.json</c>.
/// </summary>
public sealed class ZooLayout
{
    /// <summary>The Hub organisation of the zoo's repositories.</summary>
    public const string Organization = "zoo";

    /// <summary>The base model's name.</summary>
    public const string BaseName = "base";

    /// <summary>The files every model repository holds.</summary>
    public static IReadOnlyList<string> ModelFiles { get; } =
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md"];

    public ZooLayout(string root)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(root);
        Root = Path.GetFullPath(root);
    }

    /// <summary>The zoo's root folder (absolute).</summary>
    public string Root { get; }

    /// <summary>The folder the Hub server serves: <c>{Root}/repos</c>.</summary>
    public string ReposRoot => Path.Combine(Root, "repos");

    /// <summary>zoo.json.</summary>
    public string ManifestPath => Path.Combine(Root, ZooManifest.FileName);

    /// <summary>The Hub repository id of a model: <c>zoo/{name}</c>.</summary>
    public static string RepoId(string model) => $"{Organization}/{model}";

    /// <summary>The model folder of <paramref name="model"/> (<c>base</c> or a task name).</summary>
    public string ModelPath(string model) => Path.Combine(ReposRoot, Organization, model);

    /// <summary>The data folder of <paramref name="task"/>.</summary>
    public string DataPath(string task) => Path.Combine(Root, "data", task);

    public string TrainPath(string task) => Path.Combine(DataPath(task), "train.jsonl");

    /// <summary>The held-out evaluation set of <paramref name="task"/> (JSONL, prompt/response).</summary>
    public string EvalPath(string task) => Path.Combine(DataPath(task), "eval.jsonl");

    /// <summary>The development set of <paramref name="task"/> (JSONL, prompt/response): for choosing settings, never for reporting.</summary>
    public string DevPath(string task) => Path.Combine(DataPath(task), "dev.jsonl");

    /// <summary>The held-out file of <paramref name="task"/> for <paramref name="split"/>.</summary>
    public string HeldOutPath(string task, HeldOutSplit split) => split switch
    {
        HeldOutSplit.Eval => EvalPath(task),
        HeldOutSplit.Dev => DevPath(task),
        _ => throw new ArgumentOutOfRangeException(nameof(split), split, "unknown held-out split"),
    };

    /// <summary>The calibration set of <paramref name="task"/> (JSONL, prompt/response).</summary>
    public string CalibrationPath(string task) => Path.Combine(DataPath(task), "calibration.jsonl");

    /// <summary><paramref name="path"/> relative to the root, with forward slashes.</summary>
    public string Relative(string path) => Path.GetRelativePath(Root, path).Replace('\\', '/');
}

/// <summary>Which held-out set a model is scored on.</summary>
public enum HeldOutSplit
{
    /// <summary>The evaluation set: the numbers that are reported.</summary>
    Eval,

    /// <summary>The development set: the numbers settings are chosen by.</summary>
    Dev,
}
