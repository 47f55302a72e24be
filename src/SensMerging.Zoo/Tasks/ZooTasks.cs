namespace SensMerging.Zoo.Tasks;

/// <summary>The zoo's three task families, in table order.</summary>
public static class ZooTasks
{
    public const string Math = MathTaskFamily.TaskName;
    public const string Code = CodeTaskFamily.TaskName;
    public const string Knowledge = KnowledgeTaskFamily.TaskName;

    /// <summary>Task names in table order: math, code, knowledge.</summary>
    public static IReadOnlyList<string> Names { get; } = [Math, Code, Knowledge];

    /// <summary>
    /// The families, in table order, with the knowledge table sized to <paramref name="knowledgeCountries"/> and the base
    /// model seeing <paramref name="baseFormatShare"/> of the templated families' other formats.
    /// </summary>
    public static IReadOnlyList<ITaskFamily> Create(int knowledgeCountries, double knowledgeBaseShare, double baseFormatShare = 0) =>
    [
        new MathTaskFamily { BaseFormatShare = baseFormatShare },
        new CodeTaskFamily { BaseFormatShare = baseFormatShare },
        new KnowledgeTaskFamily(knowledgeCountries, knowledgeBaseShare),
    ];
}
