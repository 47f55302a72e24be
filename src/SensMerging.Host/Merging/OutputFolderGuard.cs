using SensMerging.Core.Config;
using SensMerging.Core.Models;

namespace SensMerging.Host.Merging;

/// <summary>
/// The rules for a merge's output folder, applied before any work (before a Hub pull, before inputs are hashed, before a
/// registry record is written), on real paths (symbolic links resolved):
/// <list type="bullet">
/// <item>it may not be, contain or lie inside an input model folder or the Hub cache;</item>
/// <item>it may not be or contain the config file's folder, a calibration file or the registry database's folder
/// (it may lie inside them: <c>merge m.yaml --out merged</c> beside the config is the usual layout);</item>
/// <item>only one merge at a time may write it (<see cref="OutputFolderLock"/>), and without overwrite it must be absent
/// or empty (checked under the lock).</item>
/// </list>
/// With <c>--overwrite</c> an existing output folder is deleted once the new one is complete, so these rules are what
/// keeps that from ever deleting an input.
/// </summary>
public sealed class OutputFolderGuard
{
    private readonly string? _hubCache;
    private readonly string? _registryFile;

    /// <param name="hubCache">The Hub cache root the merge's Hub inputs are pulled into.</param>
    /// <param name="registryFile">The registry database file.</param>
    public OutputFolderGuard(string? hubCache, string? registryFile)
    {
        _hubCache = hubCache;
        _registryFile = registryFile;
    }

    /// <summary>
    /// Checks the rules and takes the output folder's lock (held until disposed, for the whole merge).
    /// </summary>
    /// <exception cref="ModelFolderException">The output folder breaks a rule; the message names both paths.</exception>
    /// <exception cref="OutputFolderBusyException">Another merge is writing the same output folder.</exception>
    public OutputFolderLock Claim(string outputPath, bool overwrite, MergeConfig config)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputPath);
        ArgumentNullException.ThrowIfNull(config);
        CheckOverlaps(outputPath, config);
        var claim = OutputFolderLock.Acquire(outputPath);
        try
        {
            MergedModelWriter.CheckDestination(outputPath, overwrite);
            return claim;
        }
        catch
        {
            claim.Dispose();
            throw;
        }
    }

    /// <summary>Throws when the output folder overlaps something the merge reads or the host keeps.</summary>
    public void CheckOverlaps(string outputPath, MergeConfig config)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputPath);
        ArgumentNullException.ThrowIfNull(config);
        var given = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputPath));
        var output = RealPath.Of(given);
        foreach (var (what, path, insideAllowed) in Protected(config))
        {
            var real = RealPath.Of(path);
            var relation = RealPath.IsSameOrInside(real, output)
                ? string.Equals(real, output, StringComparison.Ordinal) ? "is" : "contains"
                : !insideAllowed && RealPath.IsSameOrInside(output, real) ? "lies inside" : null;
            if (relation is not null)
            {
                var harm = relation == "lies inside" ? "the merge would write into it" : "--overwrite would delete it";
                throw new ModelFolderException(
                    $"output folder {Shown(given, output)} {relation} the {what} {Shown(path, real)}: {harm}; choose an output folder outside it");
            }
        }
    }

    private IEnumerable<(string What, string Path, bool InsideAllowed)> Protected(MergeConfig config)
    {
        foreach (var model in config.ReferencedModels().Where(m => m.IsLocal))
        {
            yield return ("input model folder", model.LocalPath!, false);
        }
        foreach (var adapter in config.ReferencedModels().Select(m => m.Lora).OfType<ModelReference>().Where(a => a.IsLocal))
        {
            yield return ("LoRA adapter folder", adapter.LocalPath!, false);
        }
        if (config.TokenizerSource?.Model is { IsLocal: true } tokenizer)
        {
            yield return ("tokenizer source folder", tokenizer.LocalPath!, false);
        }
        foreach (var calibration in config.Models.Select(m => m.Calibration).OfType<CalibrationSource>())
        {
            yield return ("calibration file", Path.GetFullPath(calibration.Path, config.BaseDirectory), true);
        }
        if (config.SourcePath is { } configFile)
        {
            yield return ("config file's folder", Path.GetDirectoryName(Path.GetFullPath(configFile))!, true);
        }
        if (_hubCache is not null)
        {
            yield return ("Hub cache", Path.GetFullPath(_hubCache), false);
        }
        if (_registryFile is not null)
        {
            yield return ("registry database's folder", Path.GetDirectoryName(Path.GetFullPath(_registryFile))!, true);
        }
    }

    private static string Shown(string given, string real) =>
        string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(given)), real, StringComparison.Ordinal) ? $"'{real}'" : $"'{given}' (real path '{real}')";
}

/// <summary>Full paths with every symbolic link resolved, for comparing folders that may be reached through links.</summary>
public static class RealPath
{
    private const int MaxLinks = 40;

    /// <summary>
    /// <paramref name="path"/> made full, then resolved component by component (as <c>realpath</c> does); the part that
    /// does not exist yet is kept as written.
    /// </summary>
    public static string Of(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = Path.GetFullPath(path);
        var root = Path.GetPathRoot(full) ?? "/";
        var pending = new Stack<string>(Parts(full[root.Length..]).Reverse());
        var resolved = root;
        var links = 0;
        while (pending.TryPop(out var part))
        {
            if (part is "" or ".")
            {
                continue;
            }
            if (part == "..")
            {
                resolved = Path.GetDirectoryName(resolved) ?? root;
                continue;
            }
            var next = Path.Join(resolved, part);
            var target = new FileInfo(next).LinkTarget;
            if (target is null)
            {
                resolved = next;
                continue;
            }
            if (++links > MaxLinks)
            {
                throw new IOException($"too many levels of symbolic links in '{path}'");
            }
            if (Path.IsPathRooted(target))
            {
                resolved = Path.GetPathRoot(target) ?? root;
                target = target[resolved.Length..];
            }
            foreach (var p in Parts(target).Reverse())
            {
                pending.Push(p);
            }
        }
        return Path.TrimEndingDirectorySeparator(resolved);
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="folder"/> or lies inside it (both real, full paths).</summary>
    public static bool IsSameOrInside(string path, string folder)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(folder);
        var f = Path.TrimEndingDirectorySeparator(folder);
        var p = Path.TrimEndingDirectorySeparator(path);
        return string.Equals(p, f, StringComparison.Ordinal)
            || p.StartsWith(Path.EndsInDirectorySeparator(f) ? f : f + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    private static string[] Parts(string path) => path.Split(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
}
