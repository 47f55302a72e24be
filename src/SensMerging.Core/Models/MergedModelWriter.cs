using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace SensMerging.Core.Models;

/// <summary>
/// Writes a merged model folder safely: everything goes into a temporary sibling <c>&lt;out&gt;.partial-&lt;random&gt;</c>,
/// which is moved into place by <see cref="Commit"/> only when complete. Disposing without committing deletes it, so an
/// interrupted merge never leaves something that looks finished.
/// </summary>
public sealed partial class MergedModelWriter : IDisposable
{
    /// <summary>What comes between the output folder's name and the random part of a temporary folder's name.</summary>
    public const string WorkFolderMarker = ".partial-";

    /// <summary>Tokenizer files copied when present in the source folder.</summary>
    public static IReadOnlyList<string> TokenizerFiles { get; } =
    [
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
        "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "chat_template.jinja", "chat_template.json",
    ];

    /// <summary>The generation config, copied when present.</summary>
    public const string GenerationConfigFileName = "generation_config.json";

    /// <summary>The model card file.</summary>
    public const string ModelCardFileName = "README.md";

    private readonly bool _overwrite;
    private bool _committed;

    private MergedModelWriter(string outputPath, string workPath, bool overwrite)
    {
        OutputPath = outputPath;
        WorkPath = workPath;
        _overwrite = overwrite;
    }

    /// <summary>Where the finished model ends up.</summary>
    public string OutputPath { get; }

    /// <summary>The temporary folder being written.</summary>
    public string WorkPath { get; }

    /// <summary>
    /// Throws when <paramref name="outputPath"/> is an existing non-empty folder (or a file) and <paramref name="overwrite"/>
    /// is false. Call it before doing any work.
    /// </summary>
    public static void CheckDestination(string outputPath, bool overwrite)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputPath);
        var full = Path.GetFullPath(outputPath);
        if (File.Exists(full))
        {
            throw new ModelFolderException($"output path '{full}' is an existing file");
        }
        if (!overwrite && Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any())
        {
            throw new ModelFolderException($"output folder '{full}' already exists and is not empty (set overwrite to replace it)");
        }
        var parent = Path.GetDirectoryName(full.TrimEnd(Path.DirectorySeparatorChar));
        if (parent is null)
        {
            throw new ModelFolderException($"output path '{full}' has no parent folder");
        }
    }

    /// <summary>A new temporary folder name beside <paramref name="outputPath"/>: <c>&lt;out&gt;.partial-&lt;12 hex digits&gt;</c>.</summary>
    public static string NewWorkPath(string outputPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputPath);
        return Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputPath)) + WorkFolderMarker + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
    }

    /// <summary>True when <paramref name="path"/> is named like a temporary folder from <see cref="NewWorkPath"/>.</summary>
    public static bool IsWorkPath(string? path) =>
        !string.IsNullOrEmpty(path) && Path.IsPathFullyQualified(path) && WorkFolderName().IsMatch(Path.GetFileName(Path.TrimEndingDirectorySeparator(path)));

    /// <summary>
    /// Checks the destination and creates the temporary folder beside it: <paramref name="workPath"/> when given (from
    /// <see cref="NewWorkPath"/>, so that a caller can record it first), else a new one.
    /// </summary>
    public static MergedModelWriter Create(string outputPath, bool overwrite, string? workPath = null)
    {
        CheckDestination(outputPath, overwrite);
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputPath));
        var work = workPath ?? NewWorkPath(full);
        if (!string.Equals(Path.GetDirectoryName(work), Path.GetDirectoryName(full), StringComparison.Ordinal) || !IsWorkPath(work)
            || !Path.GetFileName(work).StartsWith(Path.GetFileName(full) + WorkFolderMarker, StringComparison.Ordinal))
        {
            throw new ArgumentException($"temporary folder '{work}' is not a '{WorkFolderMarker}' sibling of '{full}'", nameof(workPath));
        }
        if (Path.Exists(work))
        {
            throw new ModelFolderException($"temporary folder '{work}' already exists");
        }
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        Directory.CreateDirectory(work);
        return new MergedModelWriter(full, work, overwrite);
    }

    /// <summary>
    /// Copies <c>config.json</c> from <paramref name="sourceFolder"/> with <c>torch_dtype</c> set to
    /// <paramref name="torchDtype"/> (when given), <c>num_hidden_layers</c> to <paramref name="layerCount"/> and
    /// <c>vocab_size</c> to <paramref name="vocabSize"/> (when given), and <c>generation_config.json</c> when present.
    /// Returns the files written.
    /// </summary>
    public IReadOnlyList<string> CopyConfig(string sourceFolder, string? torchDtype, int? layerCount = null, int? vocabSize = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(sourceFolder);
        var written = new List<string>();
        var config = Path.Combine(sourceFolder, "config.json");
        if (File.Exists(config))
        {
            var node = JsonNode.Parse(File.ReadAllText(config)) as JsonObject
                ?? throw new ModelFolderException($"{config}: expected a JSON object");
            if (torchDtype is not null)
            {
                node["torch_dtype"] = torchDtype;
            }
            if (layerCount is { } layers)
            {
                node["num_hidden_layers"] = layers;
            }
            if (vocabSize is { } vocab)
            {
                node["vocab_size"] = vocab;
            }
            var target = Path.Combine(WorkPath, "config.json");
            File.WriteAllText(target, node.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
            written.Add(target);
        }
        written.AddRange(CopyIfPresent(sourceFolder, [GenerationConfigFileName]));
        return written;
    }

    /// <summary>Copies the tokenizer files present in <paramref name="sourceFolder"/>. Returns the files written.</summary>
    public IReadOnlyList<string> CopyTokenizer(string sourceFolder)
    {
        ArgumentException.ThrowIfNullOrEmpty(sourceFolder);
        return CopyIfPresent(sourceFolder, TokenizerFiles);
    }

    /// <summary>Writes <c>README.md</c> from the card.</summary>
    public string WriteModelCard(ModelCard card)
    {
        ArgumentNullException.ThrowIfNull(card);
        var target = Path.Combine(WorkPath, ModelCardFileName);
        File.WriteAllText(target, card.Render());
        return target;
    }

    /// <summary>
    /// Moves the finished folder into place. With overwrite, an existing output is moved aside first and deleted only
    /// after the new one is in place.
    /// </summary>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(_committed, this);
        string? aside = null;
        if (Directory.Exists(OutputPath))
        {
            if (Directory.EnumerateFileSystemEntries(OutputPath).Any())
            {
                if (!_overwrite)
                {
                    // Dispose removes the temporary folder: say so, rather than pointing at a folder that will be gone.
                    throw new ModelFolderException(
                        $"output folder '{OutputPath}' appeared while merging and is not empty; the merged model was not moved there and its temporary folder '{WorkPath}' is removed (set overwrite to replace the folder)");
                }
                aside = OutputPath + ".old-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
                Directory.Move(OutputPath, aside);
            }
            else
            {
                Directory.Delete(OutputPath);
            }
        }
        try
        {
            Directory.Move(WorkPath, OutputPath);
        }
        catch when (aside is not null)
        {
            Directory.Move(aside, OutputPath);
            throw;
        }
        _committed = true;
        if (aside is not null)
        {
            Directory.Delete(aside, recursive: true);
        }
    }

    /// <summary>Deletes the temporary folder unless committed.</summary>
    public void Dispose()
    {
        if (!_committed && Directory.Exists(WorkPath))
        {
            Directory.Delete(WorkPath, recursive: true);
        }
        _committed = true;
    }

    private List<string> CopyIfPresent(string sourceFolder, IEnumerable<string> names)
    {
        var written = new List<string>();
        foreach (var name in names)
        {
            var source = Path.Combine(sourceFolder, name);
            if (File.Exists(source))
            {
                var target = Path.Combine(WorkPath, name);
                File.Copy(source, target, overwrite: true);
                written.Add(target);
            }
        }
        return written;
    }

    [GeneratedRegex(@"\.partial-[0-9a-f]{12}$", RegexOptions.CultureInvariant)]
    private static partial Regex WorkFolderName();
}
