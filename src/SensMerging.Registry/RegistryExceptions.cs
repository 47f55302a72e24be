namespace SensMerging.Registry;

/// <summary>The registry file is not a LiteDB database, or is damaged. The file was left as it was.</summary>
public sealed class RegistryCorruptException : Exception
{
    public RegistryCorruptException(string filePath, string problem, Exception? inner = null)
        : base($"registry file '{filePath}' is not usable: {problem}. The file was not modified; move it aside (or restore a backup) to start a new registry.", inner)
    {
        FilePath = filePath;
        Problem = problem;
    }

    public RegistryCorruptException()
        : this(string.Empty, "unknown problem")
    {
    }

    public RegistryCorruptException(string message)
        : this(string.Empty, message)
    {
    }

    public RegistryCorruptException(string message, Exception inner)
        : this(string.Empty, message, inner)
    {
    }

    public string FilePath { get; }

    public string Problem { get; }
}

/// <summary>The registry file was written by a newer sensmerge (a schema this build does not know). The file was left as it was.</summary>
public sealed class RegistrySchemaException : Exception
{
    public RegistrySchemaException(string filePath, int fileVersion, int knownVersion)
        : base($"registry file '{filePath}' has schema version {fileVersion}, but this sensmerge knows versions up to {knownVersion}; use a newer sensmerge. The file was not modified.")
    {
        FilePath = filePath;
        FileVersion = fileVersion;
        KnownVersion = knownVersion;
    }

    public RegistrySchemaException()
    {
        FilePath = string.Empty;
    }

    public RegistrySchemaException(string message)
        : base(message)
    {
        FilePath = string.Empty;
    }

    public RegistrySchemaException(string message, Exception inner)
        : base(message, inner)
    {
        FilePath = string.Empty;
    }

    public string FilePath { get; }

    public int FileVersion { get; }

    public int KnownVersion { get; }
}

/// <summary>No record has the given id (or id prefix).</summary>
public sealed class MergeNotFoundException : KeyNotFoundException
{
    public MergeNotFoundException(string id)
        : base($"no merge with id '{id}' in the registry")
    {
        Id = id;
    }

    public MergeNotFoundException()
    {
        Id = string.Empty;
    }

    public MergeNotFoundException(string message, Exception inner)
        : base(message, inner)
    {
        Id = string.Empty;
    }

    public string Id { get; }
}

/// <summary>An id prefix matches several records.</summary>
public sealed class AmbiguousMergeIdException : ArgumentException
{
    public AmbiguousMergeIdException(string prefix, IReadOnlyList<string> matches)
        : base($"id prefix '{prefix}' matches {matches.Count} merges ({string.Join(", ", matches.Take(5))}{(matches.Count > 5 ? ", ..." : string.Empty)}); give more characters")
    {
        Prefix = prefix;
        Matches = matches;
    }

    public AmbiguousMergeIdException()
    {
        Prefix = string.Empty;
        Matches = [];
    }

    public AmbiguousMergeIdException(string message)
        : base(message)
    {
        Prefix = string.Empty;
        Matches = [];
    }

    public AmbiguousMergeIdException(string message, Exception inner)
        : base(message, inner)
    {
        Prefix = string.Empty;
        Matches = [];
    }

    public string Prefix { get; }

    public IReadOnlyList<string> Matches { get; }
}

/// <summary>A lifecycle call that does not fit the record's state (for example completing a merge that already failed).</summary>
public sealed class MergeStateException : InvalidOperationException
{
    public MergeStateException(string id, MergeStatus status, string action)
        : base($"merge '{id}' is {status.ToString().ToLowerInvariant()}; cannot {action} it (only a running merge can be)")
    {
        Id = id;
        Status = status;
    }

    public MergeStateException()
    {
        Id = string.Empty;
    }

    public MergeStateException(string message)
        : base(message)
    {
        Id = string.Empty;
    }

    public MergeStateException(string message, Exception inner)
        : base(message, inner)
    {
        Id = string.Empty;
    }

    public string Id { get; }

    public MergeStatus Status { get; }
}
