using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using SensMerging.Registry.Storage;

namespace SensMerging.Registry;

/// <summary>An input of a reproduction: the reference pinned to the commit the original merge used.</summary>
/// <param name="Name">The input's name.</param>
/// <param name="Reference">The reference as originally written.</param>
/// <param name="PinnedReference"><c>org/name@commit</c> for Hub inputs with a resolved commit; the reference unchanged otherwise.</param>
/// <param name="ResolvedCommit">The commit, when known.</param>
/// <param name="LocalPath">The folder the original merge read.</param>
/// <param name="Files">The files and hashes the original merge read (to verify local inputs before re-running).</param>
public sealed record PinnedInput(string Name, string Reference, string PinnedReference, string? ResolvedCommit, string? LocalPath, IReadOnlyList<FileHash> Files);

/// <summary>What re-running a merge needs: its config with Hub references pinned to commits, the seed and the output dtype asked for.</summary>
/// <param name="SourceId">The merge being reproduced.</param>
/// <param name="ConfigText">The config as originally given.</param>
/// <param name="PinnedConfigText">The config with every Hub reference rewritten to <c>org/name@commit</c>.</param>
/// <param name="Seed">The seed to pass (<c>--seed</c>).</param>
/// <param name="OutDtype">The output dtype the original asked for (<c>--dtype</c> or <c>out_dtype</c>), passed again as <c>--dtype</c>; the config's <c>dtype</c> is in its text.</param>
/// <param name="ComputeDtype">The compute dtype the original asked for (<c>--compute-dtype</c>), passed again; null: mergekit's rule.</param>
/// <param name="Inputs">Inputs in merge order.</param>
/// <param name="Warnings">Why the reproduction may not be exact (unpinned local folders, no seed...).</param>
public sealed record ReproductionPlan(
    string SourceId,
    string ConfigText,
    string PinnedConfigText,
    long? Seed,
    string? OutDtype,
    string? ComputeDtype,
    IReadOnlyList<PinnedInput> Inputs,
    IReadOnlyList<string> Warnings)
{
    /// <summary>Builds the plan from a record. Throws when the record has no config text.</summary>
    public static ReproductionPlan From(MergeRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        if (string.IsNullOrWhiteSpace(record.ConfigText))
        {
            throw new InvalidOperationException($"merge '{record.Id}' has no config text recorded; it cannot be reproduced");
        }
        var warnings = new List<string>();
        if (record.Status != MergeStatus.Succeeded)
        {
            warnings.Add($"the original merge {record.Status.ToString().ToLowerInvariant()}; there are no output hashes to compare with");
        }
        var inputs = new List<PinnedInput>();
        var pinned = record.ConfigText;
        foreach (var input in record.Inputs)
        {
            var repo = ModelKeys.RepoPart(input.Reference);
            string pinnedRef = input.Reference;
            if (repo is not null && !string.IsNullOrEmpty(input.ResolvedCommit))
            {
                pinnedRef = repo + "@" + input.ResolvedCommit;
                pinned = Rewrite(pinned, input.Reference, pinnedRef);
            }
            else if (repo is not null)
            {
                warnings.Add($"input '{input.Name}' ({input.Reference}) has no resolved commit; it is used as written");
            }
            else
            {
                warnings.Add($"input '{input.Name}' is a local folder ({input.LocalPath ?? input.Reference}); verify its files against the recorded hashes");
            }
            inputs.Add(new PinnedInput(input.Name, input.Reference, pinnedRef, input.ResolvedCommit, input.LocalPath, input.Files));
        }
        if (record.Seed is null && NeedsSeed(record))
        {
            warnings.Add("no seed was recorded; a strategy with random dropping will not give identical output");
        }
        return new ReproductionPlan(record.Id, record.ConfigText, pinned, record.Seed, record.OutDtype, record.ComputeDtype, inputs, warnings);
    }

    /// <summary>A readable summary for <c>registry reproduce</c>.</summary>
    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"reproduce {SourceId}: seed {Seed?.ToString(CultureInfo.InvariantCulture) ?? "none"}{(OutDtype is null ? string.Empty : ", output dtype " + OutDtype)}{(ComputeDtype is null ? string.Empty : ", compute dtype " + ComputeDtype)}").AppendLine();
        foreach (var i in Inputs)
        {
            sb.Append(CultureInfo.InvariantCulture, $"  {i.Name}: {i.PinnedReference}").AppendLine();
        }
        foreach (var w in Warnings)
        {
            sb.Append("  warning: ").AppendLine(w);
        }
        return sb.ToString();
    }

    private static bool NeedsSeed(MergeRecord record) =>
        record.Strategy?.Component.Contains("dare", StringComparison.OrdinalIgnoreCase) == true
        || record.Strategy?.Component.Contains("breadcrumbs", StringComparison.OrdinalIgnoreCase) == true;

    /// <summary>Replaces whole occurrences of <paramref name="reference"/> (not parts of longer names or paths).</summary>
    private static string Rewrite(string text, string reference, string replacement)
    {
        var pattern = @"(?<![\w./@~-])" + Regex.Escape(reference.Trim()) + @"(?![\w./@-])";
        return Regex.Replace(text, pattern, replacement.Replace("$", "$$", StringComparison.Ordinal), RegexOptions.CultureInvariant, TimeSpan.FromSeconds(2));
    }
}

/// <summary>One output file that differs between two merges.</summary>
/// <param name="Path">Relative path in the output folder.</param>
/// <param name="Difference"><c>onlyLeft</c>, <c>onlyRight</c> or <c>contentDiffers</c>.</param>
public sealed record OutputFileDifference(string Path, string Difference, string? LeftSha256, string? RightSha256, long? LeftSize, long? RightSize);

/// <summary>Whether two merges wrote identical outputs (by recorded SHA-256), and where they differ.</summary>
public sealed record OutputComparison(string LeftId, string RightId, bool Identical, int FilesCompared, IReadOnlyList<OutputFileDifference> Differences)
{
    /// <summary>Files that name the merge itself (the model card carries the registry id) and so always differ between runs.</summary>
    public static IReadOnlySet<string> ProvenanceFiles { get; } = new HashSet<string>(StringComparer.Ordinal) { "README.md" };

    /// <summary>
    /// Compares the recorded output hashes of two merges. <paramref name="ignore"/> lists relative paths to leave out
    /// (for example <see cref="ProvenanceFiles"/>). Throws when either merge has no outputs.
    /// </summary>
    public static OutputComparison Compare(MergeRecord left, MergeRecord right, IReadOnlySet<string>? ignore = null)
    {
        ArgumentNullException.ThrowIfNull(left);
        ArgumentNullException.ThrowIfNull(right);
        var lo = left.Outputs ?? throw new InvalidOperationException($"merge '{left.Id}' has no outputs ({left.Status.ToString().ToLowerInvariant()})");
        var ro = right.Outputs ?? throw new InvalidOperationException($"merge '{right.Id}' has no outputs ({right.Status.ToString().ToLowerInvariant()})");
        var lf = lo.Files.Where(f => ignore?.Contains(f.Path) != true).ToDictionary(f => f.Path, StringComparer.Ordinal);
        var rf = ro.Files.Where(f => ignore?.Contains(f.Path) != true).ToDictionary(f => f.Path, StringComparer.Ordinal);
        var diffs = new List<OutputFileDifference>();
        var paths = lf.Keys.Union(rf.Keys).Order(StringComparer.Ordinal).ToList();
        foreach (var path in paths)
        {
            var l = lf.GetValueOrDefault(path);
            var r = rf.GetValueOrDefault(path);
            if (l is null || r is null)
            {
                diffs.Add(new OutputFileDifference(path, l is null ? "onlyRight" : "onlyLeft", l?.Sha256, r?.Sha256, l?.Size, r?.Size));
            }
            else if (!string.Equals(l.Sha256, r.Sha256, StringComparison.OrdinalIgnoreCase) || l.Size != r.Size)
            {
                diffs.Add(new OutputFileDifference(path, "contentDiffers", l.Sha256, r.Sha256, l.Size, r.Size));
            }
        }
        return new OutputComparison(left.Id, right.Id, diffs.Count == 0, paths.Count, diffs);
    }

    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"outputs of {LeftId} and {RightId}: ")
            .AppendLine(Identical ? $"identical ({FilesCompared} files, same SHA-256)" : $"{Differences.Count} of {FilesCompared} files differ");
        foreach (var d in Differences)
        {
            sb.Append(CultureInfo.InvariantCulture, $"  {d.Path}: {d.Difference} ({Short(d.LeftSha256)} {d.LeftSize?.ToString(CultureInfo.InvariantCulture) ?? "-"} B -> {Short(d.RightSha256)} {d.RightSize?.ToString(CultureInfo.InvariantCulture) ?? "-"} B)").AppendLine();
        }
        return sb.ToString();
    }

    private static string Short(string? sha) => sha is null ? "-" : sha[..Math.Min(12, sha.Length)];
}
