
namespace SensMerging.Registry.Lifecycle;

/// <summary>
/// The rules of a record's life that do not depend on how records are stored: only a running merge changes, durations
/// are finite and never negative, hashes are well-formed, a completed merge lists outputs that exist with their sizes.
/// A storage backend applies these; it does not restate them.
/// </summary>
internal static class MergeRecordRules
{
    /// <summary>Refuses a change of a record that is no longer running (<paramref name="action"/> names the change).</summary>
    public static void RequireRunning(MergeRecord record, string action)
    {
        if (record.Status != MergeStatus.Running)
        {
            throw new MergeStateException(record.Id, record.Status, action);
        }
    }

    /// <summary>The record's phase durations with <paramref name="durations"/> added (finite, >= 0); the total from the start when none is given.</summary>
    public static IReadOnlyDictionary<string, double> MergeDurations(MergeRecord current, IReadOnlyDictionary<string, double>? durations, DateTime finished)
    {
        var merged = new Dictionary<string, double>(current.Durations, StringComparer.Ordinal);
        if (durations is not null)
        {
            foreach (var (k, v) in durations)
            {
                if (!double.IsFinite(v) || v < 0)
                {
                    throw new ArgumentOutOfRangeException(nameof(durations), v, $"duration '{k}' must be a finite number of seconds >= 0");
                }
                merged[k] = v;
            }
        }
        if (!merged.ContainsKey(Phases.Total))
        {
            merged[Phases.Total] = Math.Max(0, (finished - current.StartedAt).TotalSeconds);
        }
        return merged;
    }

    /// <summary>Checks what a record holds: input names, references and file hashes, score tables and coefficients.</summary>
    public static void ValidateContent(MergeRecord record)
    {
        foreach (var input in record.Inputs)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(input.Name, "input name");
            ArgumentException.ThrowIfNullOrWhiteSpace(input.Reference, "input reference");
            foreach (var f in input.Files)
            {
                ValidateHash(f, $"input '{input.Name}'");
            }
        }
        foreach (var table in record.ScoreTables)
        {
            table.Validate();
        }
        record.Coefficients?.Validate();
    }

    /// <summary>A file's path, 64-digit lowercase sha256 and size.</summary>
    public static void ValidateHash(FileHash file, string owner)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(file.Path, "file path");
        if (file.Sha256 is null || file.Sha256.Length != 64 || !file.Sha256.All(char.IsAsciiHexDigitLower))
        {
            throw new ArgumentException($"{owner} file '{file.Path}': sha256 must be 64 lowercase hex digits, got '{file.Sha256}'");
        }
        if (file.Size < 0)
        {
            throw new ArgumentException($"{owner} file '{file.Path}': size {file.Size} is negative");
        }
    }

    /// <summary>A completed merge's outputs: files listed with hashes, on disk with their recorded sizes when <paramref name="verifyFiles"/>, totals consistent.</summary>
    public static MergeOutputs CheckOutputs(MergeOutputs outputs, bool verifyFiles, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputs.Folder, "output folder");
        if (outputs.Files.Count == 0)
        {
            throw new ArgumentException("a completed merge must list its output files with their hashes", nameof(outputs));
        }
        var folder = Path.GetFullPath(outputs.Folder);
        long total = 0;
        foreach (var file in outputs.Files)
        {
            cancellationToken.ThrowIfCancellationRequested();
            ValidateHash(file, "output");
            total += file.Size;
            if (verifyFiles)
            {
                var info = new FileInfo(Path.Combine(folder, file.Path));
                if (!info.Exists)
                {
                    throw new ArgumentException($"output file '{info.FullName}' does not exist; complete a merge only after its output is in place", nameof(outputs));
                }
                if (info.Length != file.Size)
                {
                    throw new ArgumentException($"output file '{info.FullName}' is {info.Length} bytes but recorded as {file.Size}", nameof(outputs));
                }
            }
        }
        if (outputs.TotalBytes != 0 && outputs.TotalBytes != total)
        {
            throw new ArgumentException($"output total {outputs.TotalBytes} bytes does not match the sum of file sizes {total}", nameof(outputs));
        }
        if (outputs.TensorCount < 0)
        {
            throw new ArgumentException($"tensor count {outputs.TensorCount} is negative", nameof(outputs));
        }
        return outputs with { Folder = folder, TotalBytes = total };
    }
}
